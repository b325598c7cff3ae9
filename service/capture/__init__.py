"""Capture: where audio comes from (devices, files, the demo clip) and how a microphone's stream is cut into
analysis windows (`sources`, `windowing`).

May import: service's base modules (config, records, vocabulary, logs) and encoder/. Nothing else in service/.
"""
