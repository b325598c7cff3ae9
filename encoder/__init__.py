"""roomtone's encoder: log-Mel features, audio and dataset readers, the triplet-trained embedding and its evaluation.

Nothing here imports `service`; the daemon imports from here."""
