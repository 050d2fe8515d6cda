"""One run of the loop and its directory: its parts and their construction (``build``), start-up
checks (``startup``), the label-changing config a resume must keep (``fingerprint``), the per-round
state that makes a killed run resume (``state``), the evaluation against the reference
(``evaluation``) and the figures of each round and of the run (``metrics``)."""
