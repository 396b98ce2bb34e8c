"""Offline evaluation harness (`ilmrec eval`): import conversations, replay them through systems, report.

`logs` reads JSONL logs, `importers` turns ReDial/INSPIRED files and our session log into evaluation turns,
`entity_linking` maps dataset entities to catalogue ids, `systems` holds what is compared, `metrics` the pure
metric functions, `replay` the protocol, `report` the outputs, `command` the CLI entry.
"""
