"""One run of the loop and its directory: start-up checks (``startup``), the per-round state that
makes a killed run resume (``state``), and the evaluation against the reference (``evaluation``)."""
