"""Tasks and examples: loading files, validating them, sampling k per class."""

from tailorlm.data.task import Example, Task, TaskKind

__all__ = ["Example", "Task", "TaskKind"]
