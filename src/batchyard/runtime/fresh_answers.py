"""A question many threads ask at once, asked once for all of them without any of them
getting an answer older than its question: a caller that arrives while the question is
out waits for the next asking (which starts as soon as the current one is answered) and
shares it with every other caller that arrived meanwhile. So N concurrent callers cost at
most two askings, and each answer still comes from an asking that began after its caller
arrived (what a check of whether something changed needs)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any


class _Question:
    def __init__(self) -> None:
        self.busy = False
        self.started = 0  # askings begun
        self.answered = 0  # the last asking answered
        self.answer: tuple[bool, Any] = (True, None)  # (ok, value or exception)
        self.callers = 0


class FreshAnswers:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._questions: dict[Hashable, _Question] = {}

    def waiting(self) -> int:
        """How many callers are asking now, over every question."""
        with self._cond:
            return sum(question.callers for question in self._questions.values())

    def ask(self, key: Hashable, asking: Callable[[], Any]) -> Any:
        """`asking()`'s value (or exception) from an asking of `key` begun after this call."""
        with self._cond:
            question = self._questions.setdefault(key, _Question())
            question.callers += 1
            wanted = question.started + 1  # the first asking that begins from now on
            try:
                while question.answered < wanted:
                    if question.busy:
                        self._cond.wait()
                        continue
                    question.busy, question.started = True, question.started + 1
                    number = question.started
                    self._cond.release()
                    try:
                        answer = (True, asking())
                    except BaseException as exc:  # shared as it is: each caller raises it
                        answer = (False, exc)
                    finally:
                        self._cond.acquire()
                    question.busy, question.answered, question.answer = False, number, answer
                    self._cond.notify_all()
                ok, value = question.answer
            finally:
                question.callers -= 1
                if question.callers == 0 and not question.busy:
                    del self._questions[key]
        if not ok:
            raise value
        return value
