"""Evaluation: instruction recovery (`recovery.py`); harmlessness, over-refusal,
helpfulness and judge agreement come with the alignment stage. `embed.py` gives the
offline MiniLM sentence embedder used for similarity, dedup and diversity."""
