"""Analysis: a window in, a record out. The model the daemon serves (`serving_model`) and its runner
(`model_runner`: embedding + activity head), the activity decision (`activity`), window health and drift
(`window_health`, `drift_baselines`), custom sounds (`sound_library`), the per-microphone state machine
(`mic_state`), activity sessions (`sessions`), the record builder (`result_builder`), uploads as windows
(`uploads`), and the stage that runs them all on a batch (`analyser`).

May import: capture, service's base modules (config, records, vocabulary, logs) and encoder/.
Never store, announce, api, metrics, web, cli or the daemon: analysis is pure work on windows.
"""
