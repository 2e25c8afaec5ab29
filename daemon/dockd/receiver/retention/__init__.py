"""Retention of footage in the S3 evidence store: routine footage expires after
`retention_days`, evidence is kept under a legal hold (docs/RECEIVER.md, "Retention and
evidence").

policy.py     what is kept how long; the lifecycle rules
objects.py    hold / tag / versions of one key, each change read back
lock.py       ObjectLockRetention, the S3 store's retention hooks
index.py      one entry per completed upload in the work bucket
evidence.py   flag / unflag / status (`dockd store`)
reconcile.py  records each expiry the lifecycle rule carried out, once
cli.py        the `dockd store` command
"""
