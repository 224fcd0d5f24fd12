"""The data stages, in pipeline order. A stage maps records (and backends) to records;
it does no file IO. `runner.py` does the IO, chunking, progress and resume."""
