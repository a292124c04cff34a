"""Which LoRA adapter a request runs through, shared by the backends that apply adapters (llama.cpp, transformers).

A request names an adapter (registered name or directory), ``"none"`` for the base model, or nothing: then
the adapter given at load time (``phikit.load(..., adapter=...)``, ``--adapter``) applies, else the
registry's enabled one (``phikit adapters enable``). The registry file is re-read when its mtime or size
changes, so ``phikit adapters disable`` reaches a running server on its next request, without a restart
or a reload of the base.
"""

from __future__ import annotations

import sys

from ..errors import PhikitError


class AdapterSwitch:
    """Mixin: subclasses implement ``load_adapter(spec) -> name`` (validate, load once) and
    ``activate(name | None)`` (route the next steps through it), and call :meth:`init_adapters` at the end
    of ``__init__``."""

    supports_adapters = True
    adapter: str | None = None  # the load-time default
    use_registry = True  # False: no registry default (phikit tune's own evaluation engines)

    def init_adapters(self, adapter: str | None, base) -> None:
        """Load the load-time default adapter now, so a bad one fails at load with one clear error.

        Args:
            adapter: the default adapter (name, directory, ``"none"`` or None).
            base: the base model's :class:`~phikit.models.ModelRef` (adapters must be trained on its weights).

        Raises:
            AdapterError: missing, corrupt or made for another base model.
        """
        self.adapter_base = base
        self._registry_seen: tuple | None = None
        self._registry_default: str | None = None
        if adapter == "none":  # the base model, whatever the registry enables
            self.use_registry = False
        self.adapter = self.load_adapter(adapter) if adapter and adapter != "none" else None

    def load_adapter(self, spec: str) -> str:
        raise NotImplementedError

    def default_adapter(self) -> str | None:
        """The adapter a request without one gets: ``adapter=`` at load, else the registry's enabled one.

        A registry adapter that fails to load (missing, corrupt, other base) is reported once on stderr and
        the base model answers.
        """
        if self.adapter or not self.use_registry:
            return self.adapter
        from ..adapters import read_registry, registry_path

        try:
            st = registry_path().stat()
            seen = (st.st_mtime_ns, st.st_size)
        except OSError:
            seen = None
        if seen != self._registry_seen:
            self._registry_seen, self._registry_default = seen, None
            enabled = read_registry()["enabled"] if seen else None
            if enabled:
                try:
                    self._registry_default = self.load_adapter(enabled)
                except PhikitError as exc:
                    print(f"note: enabled adapter not applied, the base model answers: {exc}", file=sys.stderr)
        return self._registry_default

    def registered_adapters(self) -> dict[str, str]:
        """Registered adapters made for this base model: name -> directory (others are left out, not raised)."""
        from ..adapters import check_base, read_manifest, read_registry

        usable = {}
        for name, path in read_registry()["adapters"].items():
            try:
                check_base(read_manifest(path), self.adapter_base, name)
            except PhikitError:
                continue
            usable[name] = path
        return usable

    def pick_adapter(self, adapter: str | None) -> str | None:
        """The adapter name a request runs through (None: the base model), loading it if needed.

        Raises:
            AdapterError: the named adapter is missing, corrupt or made for another base model.
        """
        if adapter == "none":
            return None
        if not adapter:
            return self.default_adapter()
        try:
            return self.load_adapter(adapter)
        except PhikitError:
            if adapter in self.loaded_adapters():  # a name this engine loaded from an unregistered directory
                return adapter
            raise

    def loaded_adapters(self) -> set[str]:
        """Names of the adapters this engine has loaded (``load_adapter``'s return values)."""
        loaded = getattr(self, "adapters", None)
        if loaded is None and getattr(self, "loras", None) is not None:
            loaded = self.loras.loaded
        return set(loaded or ())

    def activate(self, name: str | None) -> None:
        raise NotImplementedError

    def through(self, name: str | None, events):
        """Yield ``events`` with adapter ``name`` active at every step, so interleaved streams each keep theirs."""
        try:
            while True:
                self.activate(name)
                try:
                    ev = next(events)
                except StopIteration:
                    return
                yield ev
        finally:
            events.close()
