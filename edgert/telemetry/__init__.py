"""Telemetry over MQTT: topics, payload schema, the durable spool, the broker link, the recorder.

Nothing here imports paho at import time; only `link.py` needs it, and only when a link starts.
"""
