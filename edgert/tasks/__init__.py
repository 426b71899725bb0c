"""Task post-processing recorded in the package: model outputs -> JSON result -> annotated frame.

One task per module (raw, classification, segmentation, detection, text_detection), registered by
name; see base.py.  `task_of(graph)` reads the record the converter wrote (`edgert convert --task`).
"""
from edgert.tasks.base import FrameMeta, Task, get_task, known_tasks, read_labels, register, task_of

__all__ = ["FrameMeta", "Task", "get_task", "known_tasks", "read_labels", "register", "task_of"]
