"""Announce: what happens to an analysed batch after analysis: stored and published on the event bus
(`store_and_publish`), turned into activity sessions and MQTT messages (`announcer`), whose topics and
payloads are pure functions (`mqtt_messages`) sent by one publisher (`mqtt_publisher`).

May import: store, analysis, service's base modules and encoder/.
Never api, metrics, web, cli or the daemon.
"""
