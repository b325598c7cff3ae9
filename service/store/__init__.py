"""Store: the SQLite event store of windows, state changes and sessions (`event_store`, `session_store`),
what keeps the file honest across processes and crashes (`store_guard`), its background retention and
integrity checks (`store_upkeep`), nearest-neighbour search over stored embeddings (`similarity_index`)
and the opt-in audio clips kept beside it (`clips`).

May import: analysis (for the session records), service's base modules and encoder/.
Never announce, api, metrics, web, cli or the daemon.
"""
