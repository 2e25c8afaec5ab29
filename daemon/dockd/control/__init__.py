"""The daemon's control socket: the API (`api.py`), its client (`client.py`), who is asking
(`actor.py`, peer credentials) and the status rows both sides show (`views.py`)."""
