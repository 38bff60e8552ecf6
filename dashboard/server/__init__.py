"""The server half: storage, sessions, REST API, Socket.IO hub and web pages."""
