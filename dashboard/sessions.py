"""``from dashboard.sessions import SessionManager``: the import path of the original design."""
from dashboard.server.sessions import IngestResult, SessionManager

__all__ = ["IngestResult", "SessionManager"]
