"""`dockctl`, the station desk's command: status and clip actions (`cli.py`), chain of custody
(`audit_cli.py`), and what both share (`common.py`)."""
