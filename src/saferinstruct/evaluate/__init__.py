"""Evaluation of models: instruction recovery (`recovery.py`), harmlessness and
over-refusal (`safety.py`), helpfulness (`helpfulness.py`) and several models side by
side (`compare.py`, which the `report` command runs). The measures they share with the
pipeline (embeddings, the refusal classifier, verdicts) live in `measures/`."""
