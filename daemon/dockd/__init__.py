"""dockd: offload body-worn video from docked cameras, provably intact, then free the camera."""

__version__ = "0.1.0"
