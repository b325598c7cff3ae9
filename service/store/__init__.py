"""Store: the SQLite event store of windows, state changes, sessions and corrections behind one face
(`event_store.EventStore`, which the rest of the daemon uses), with its parts: the file and schema steps
(`store_schema`), rows and records (`window_rows`), ListEvents pages (`event_queries`), recent history
(`window_history`), retention (`retention`), sessions (`session_store`) and corrections (`correction_store`,
`corrections`); what keeps the file honest across processes and crashes (`store_guard`), its background
retention and integrity checks (`store_upkeep`), nearest-neighbour search over stored embeddings and the
cache that feeds it (`similarity_index`), and the opt-in audio clips kept beside it (`clips`).

May import: analysis (for the session records), service's base modules and encoder/.
Never announce, api, metrics, web, cli or the daemon.
"""
