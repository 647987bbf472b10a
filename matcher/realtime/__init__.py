"""The real-time side: standing indexes, instant queries, watches, and the query log.

engine.py     Realtime: answers queries and watches, changes indexes, sets limits
admission.py  what a query or watch must pass before its search (purpose, CLKs, quota)
indexes.py    every member's standing index, durable and in memory
lookups.py    the look-ups of the queries that arrive together, in one pass
watches.py    open watches and their notifications
querylog.py   every query, watch and notification recorded (server, query and audit log)
"""
