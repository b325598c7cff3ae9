"""The specific sounds of bench/specific_sounds.py: which file of which Debian package each clip comes from,
and the command that rebuilds the clips from the packages.

    mkdir /tmp/themes && cd /tmp/themes && apt-get download sound-theme-freedesktop oxygen-sounds \
        deepin-sound-theme yaru-theme-sound && for f in *.deb; do dpkg -x "$f" .; done
    .venv/bin/python -m bench.specific_sound_clips /tmp/themes     # writes bench/sounds/specific/*.flac

Each clip is the package file decoded, channels averaged, resampled to 16 kHz (encoder.resampling) and
written as 16-bit FLAC; leading and trailing silence below -60 dB of the clip's peak is trimmed.
None of these packages is a source of the unlabelled corpus or the labelled sets (checked by
`python -m bench.specific_sounds --check-sources`, which reads their manifests).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "sounds" / "specific"

#: (clip name, Debian package, file in the package, what it is)
CLIPS = (
    ("alarm-clock", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/alarm-clock-elapsed.oga", "a mechanical alarm clock ringing"),
    ("desk-bell", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/bell.oga", "a short bell strike"),
    ("camera-shutter", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/camera-shutter.oga", "a camera shutter click"),
    ("phone-ring", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/phone-incoming-call.oga", "a telephone ringing"),
    ("busy-tone", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/phone-outgoing-busy.oga", "a telephone busy tone (beeps)"),
    ("error-beep", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/suspend-error.oga", "an alarm beep"),
    ("chime-complete", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/complete.oga", "a two-note chime"),
    ("paper-rustle", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/trash-empty.oga", "paper crumpled into a bin"),
    ("message-pop", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/message-new-instant.oga", "a message notification"),
    ("message-tick", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/message.oga", "a short notification tick"),
    ("ring-tune", "oxygen-sounds", "usr/share/sounds/Oxygen-Im-Phone-Ring.ogg", "a ringing tune (doorbell-like)"),
    ("nudge", "oxygen-sounds", "usr/share/sounds/Oxygen-Im-Nudge.ogg", "a rattling nudge"),
    ("critical-alarm", "oxygen-sounds", "usr/share/sounds/Oxygen-Sys-App-Error-Critical.ogg", "a critical alarm"),
    ("success-tune", "oxygen-sounds", "usr/share/sounds/Oxygen-K3B-Finish-Success.ogg", "a short success tune"),
    ("mail-bell", "oxygen-sounds", "usr/share/sounds/Oxygen-Im-New-Mail.ogg", "a bell-like mail notification"),
    ("window-click", "oxygen-sounds", "usr/share/sounds/Oxygen-Window-Close.ogg", "a soft click"),
    ("sms-beeps", "oxygen-sounds", "usr/share/sounds/Oxygen-Im-Sms.ogg", "a phone's SMS beeps"),
    ("warning-tone", "oxygen-sounds", "usr/share/sounds/Oxygen-Sys-Warning.ogg", "a warning tone"),
    ("plug-click", "deepin-sound-theme", "usr/share/sounds/deepin/stereo/power-plug.wav", "a plug clicking in"),
    ("error-buzz", "deepin-sound-theme", "usr/share/sounds/deepin/stereo/dialog-error.wav", "an error buzz"),
    ("resume-chime", "deepin-sound-theme", "usr/share/sounds/deepin/stereo/suspend-resume.wav", "a resume chime"),
    ("printer-done", "deepin-sound-theme", "usr/share/sounds/deepin/stereo/complete-print.wav", "a printer-done jingle"),
    ("yaru-bell", "yaru-theme-sound", "usr/share/sounds/Yaru/stereo/bell.oga", "a bell ding"),
    ("battery-beep", "yaru-theme-sound", "usr/share/sounds/Yaru/stereo/battery-low.oga", "a low-battery beep"),
    ("question-pluck", "yaru-theme-sound", "usr/share/sounds/Yaru/stereo/dialog-question.oga", "a plucked two-note question"),
    ("email-drop", "yaru-theme-sound", "usr/share/sounds/Yaru/stereo/message-new-email.oga", "a water-drop email notification"),
)
RATE = 16000
TRIM_DB = -60.0


def trimmed(samples: np.ndarray) -> np.ndarray:
    """``samples`` without leading and trailing stretches below `TRIM_DB` of the peak."""
    loud = np.flatnonzero(np.abs(samples) >= np.abs(samples).max() * 10 ** (TRIM_DB / 20))
    return samples[loud[0]:loud[-1] + 1] if loud.size else samples


def main(argv: list[str]) -> int:
    """Rebuild bench/sounds/specific/*.flac from packages unpacked under ``argv[0]``."""
    import soundfile

    from encoder.resampling import resample

    root = Path(argv[0])
    OUT.mkdir(exist_ok=True)
    for name, _, member, _ in CLIPS:
        data, rate = soundfile.read(root / member, dtype="float32", always_2d=True)
        mono = trimmed(resample(data.mean(axis=1), rate, RATE))
        soundfile.write(OUT / f"{name}.flac", mono, RATE, subtype="PCM_16")
        print(f"{name}: {len(mono) / RATE:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
