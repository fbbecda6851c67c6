"""Which layers are still needed, and reclaiming the rest.

Every resource that holds layers lists all of them in `internal["layers"]`; the base image
catalog lists its own. A layer is kept while anything names it, so a VM keeps its layers
alive after the image it came from is deleted, and a snapshot's bytes stay while an image
built from it exists.
"""

from __future__ import annotations

import threading

from ..runtime.layers import LayerStore
from ..store.resources import ResourceStore


class Storage:
    def __init__(self, store: ResourceStore, layers: LayerStore, base_layers):
        self.store = store
        self.layers = layers
        self._base_layers = base_layers  # callable: layers the base image catalog needs
        # Held while layers are made and recorded, and while garbage is collected, so a
        # layer just frozen is never reclaimed before a resource names it.
        self.lock = threading.RLock()

    def needed_layers(self) -> set[str]:
        needed = set(self._base_layers())
        for internal in self.store.all_internal():
            needed.update(internal.get("layers", []))
        return needed

    def reclaim(self) -> int:
        with self.lock:
            return self.layers.collect_garbage(self.needed_layers())

    def stored_bytes(self) -> int:
        return self.layers.stored_bytes()
