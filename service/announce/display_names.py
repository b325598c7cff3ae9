"""The names people read for the daemon's labels (Home Assistant entity names and states), written once
beside the vocabulary: one table of the bundled model's activity classes, the decision's `quiet` and
`unknown`, and "no activity". A label the table does not know (a head of your own) reads as its words,
capitalised: ``kettle_boiling`` -> "Kettle boiling"."""

from __future__ import annotations

from service.daemon_vocabulary import QUIET, UNKNOWN

#: The activity value while no session is open (MQTT state `activity`, docs/mqtt.md).
NO_ACTIVITY = "none"

#: label -> (display name, Material Design icon Home Assistant shows).
LABELS: dict[str, tuple[str, str]] = {
    NO_ACTIVITY: ("No activity", "mdi:home-outline"),
    QUIET: ("Quiet", "mdi:volume-off"),
    UNKNOWN: ("Unknown sound", "mdi:help-circle-outline"),
    # the bundled model's head (models/roomtone.pt, homesounds classes)
    "animals": ("Animals", "mdi:paw"),
    "footsteps_doors": ("Footsteps and doors", "mdi:door-open"),
    "motor_machine": ("Motors and machines", "mdi:washing-machine"),
    "quiet_ambience": ("Quiet ambience", "mdi:weather-night"),
    "speech": ("Speech", "mdi:account-voice"),
    "tv_speech_music": ("TV, speech or music", "mdi:television-classic"),
    "typing": ("Typing", "mdi:keyboard-outline"),
    "water": ("Water", "mdi:water-outline"),
}
#: Icon of a label the table does not know.
DEFAULT_ICON = "mdi:home-sound-in"


def display_name(label: str) -> str:
    """What a person reads for ``label``: the table's name, else its words capitalised."""
    known = LABELS.get(label)
    if known is not None:
        return known[0]
    words = label.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else label


def label_icon(label: str) -> str:
    """The Material Design icon of ``label`` (``mdi:...``)."""
    known = LABELS.get(label)
    return known[1] if known is not None else DEFAULT_ICON
