"""Measures the data stages and the evaluations both use, below both of them.

- `text.py`: normalisers, sentences, copy checks, distinct-n (pure, no model).
- `similarity.py`: nearest-neighbour cosines, template shares, diversity, from vectors.
- `embed.py`: the offline MiniLM sentence embedder that makes those vectors.
- `splits.py`: stable hash splits (reverse-training ids, the HH-RLHF parts, the dataset).
- `refusal.py`: the refusal classifier trained on XSTest's human labels.
- `verdict.py`: asking a model a yes/no question and reading its verdict.

Pipeline stages and evaluations import from here, never from each other.
"""
