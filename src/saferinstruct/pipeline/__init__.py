"""The data stages, in pipeline order, numbered as their files (`rundir.STAGES`):
00 sources, 01 induce, 02 filter, 03 respond, 04 judge, 05 assemble. A stage maps
records (and the backends it is handed) to records; apart from reading their input
files (`sources.load_sources`, `judge.audit_file`) stages write nothing: the recipes
(`runner.py`, `api.py`) do the file IO, chunking, progress and resume."""
