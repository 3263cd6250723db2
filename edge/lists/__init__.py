"""Scan lists: every card laid under the camera while a list records, counted once per
appearance, kept in SQLite under the state directory, exported for collection tools.

store.py (the file), recorder.py (appearance counting), writer.py (the writer thread),
service.py (ScanLists, what the runtime and the API use), export.py (formats), cli.py
(`cardedge lists`).
"""
