"""The recipes behind the commands, one module per command family: `data` (init, run,
the stages, merge), `training` (reverse-train, sft, dpo), `evaluation` (eval, report),
`serving` (models, serve). `api.py` is their public face.
"""
