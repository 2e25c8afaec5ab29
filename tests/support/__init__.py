"""Test support: real peers (receiver, node tus peers) started for tests."""
