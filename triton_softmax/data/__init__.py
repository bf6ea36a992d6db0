"""Data for the accuracy benchmark: WordNet reverse-dictionary tasks and a synthetic teacher."""

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
    "Synset",
    "TeacherTask",
    "TextTask",
    "WordNetNotFound",
    "lemma_task",
    "make_teacher_task",
    "read_synsets",
    "synset_task",
    "tokenize",
]
