"""SQL over a run's records: `pcaptool query` and the numbers behind `pcaptool report`.

`sources` turns inputs (captures, NDJSON parts, directories, gs:// prefixes) into records;
`tables` flattens them into three tables (`packets`, `connections`, `requests`) in an
on-disk DuckDB database, so a run larger than memory is queried out of core; `output`
prints or writes a result. DuckDB is an optional dependency (`pip install
'pcaptool[analysis]'`): the sidecar image does not carry it.
"""
