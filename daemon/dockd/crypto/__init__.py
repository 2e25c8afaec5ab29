"""Cryptography for dockd: age v1 encryption, key files, and the server's signed receipts."""
