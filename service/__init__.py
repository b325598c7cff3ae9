"""roomtone's streaming daemon, its gRPC/Prometheus/MQTT/web faces and the `roomtone` command line.

Wings, each a package whose docstring says what it owns and what it may import (imports run one way;
tests/service/test_layout.py checks it):

    capture   audio sources and windowing                          -> base
    analysis  window -> record: model, activity, health, sounds, sessions   -> capture, base
    store     SQLite events, sessions, retention, similarity, clips  -> analysis, base
    metrics   Prometheus metrics and the /metrics listener           -> analysis, base
    announce  store-and-publish, sessions and MQTT out               -> store, analysis, base
    api       gRPC servicers, security, client                       -> metrics, store, analysis, capture, base
    web       the web page's server, live feed and views             -> store, analysis, capture, base
    cli       the `roomtone` commands                                -> anything

Base modules, importable from every wing: `config` (the one config schema), `records` (the record types the
wings pass on), `daemon_vocabulary` (the daemon's words), `logs` (formats and the one log throttle), `periodic`
(the one periodic-thread loop), `state_files` (atomic small files), `disk_space` (free space) and the generated
`rpc` stubs. They import nothing else in service/. `pipeline` (the per-microphone
threads) and `daemon` (start order, stop order) wire the wings together; only cli imports them.
encoder/ never imports service/.
"""
