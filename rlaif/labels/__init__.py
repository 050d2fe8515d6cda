"""Buying labels, in one place: the labeller that asks the judge (``labeler``), the ledger every
paid answer is committed to before it is used (``ledger``; the labeller's writes to it are
group-committed by ``group_commit``), the budget that reserves the worst case
before a call and settles the real cost after (``budget``), the judge-health guard
(``judge_health``), the preference set built from the labels (``preferences``), the zero-cost
re-parse of stored answers (``reparse``) and the label store runs share (``ledger_cache=``:
``shared_store``, the interface and its in-flight claims; ``shared_sqlite``, one machine;
``ledger_pg``, PostgreSQL for several)."""
