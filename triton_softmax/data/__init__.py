"""Data for the accuracy benchmark: WordNet reverse-dictionary tasks, a synthetic teacher and a
Zipfian next-token task over the Python standard library's source (pycode)."""

from .pycode import PyCodeTask, pycode_task
from .teacher import TeacherTask, make_teacher_task
from .wordnet import (
    Bags,
    Synset,
    TextTask,
    WordNetNotFound,
    lemma_task,
    read_synsets,
    synset_task,
    tokenize,
)

__all__ = [
    "Bags",
    "PyCodeTask",
    "Synset",
    "TeacherTask",
    "TextTask",
    "WordNetNotFound",
    "lemma_task",
    "make_teacher_task",
    "pycode_task",
    "read_synsets",
    "synset_task",
    "tokenize",
]
