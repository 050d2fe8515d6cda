"""The models a run holds: the policy and its frozen reference (``policy``), the reference's
log-prob scorer (``scoring``) and the free gold sentiment scorer (``gold``)."""
