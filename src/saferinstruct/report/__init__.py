"""The reports: the data report of a run directory (`data.py`) and the model comparison
(`comparison.py`), both rendered with the shared helpers of `render.py`."""
