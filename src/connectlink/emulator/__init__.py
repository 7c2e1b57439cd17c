"""The emulator's control plane, free of the framework: per-retailer virtual clocks, fault
rules and when they fire, the request journal, token lifecycles and snapshots. The server's
admin plane (``server/endpoints/admin.py``) and the operation table's seam
(``server/controls.py``) use it; the state itself lives in the store (``storage/emulator.py``),
so every worker and host sees one."""
