"""The wizard's screens, one module per step (choose, backup, job, target, partition,
preview, confirm, progress, end); the flow that connects them is in ``restore_tui.app``.
"""
