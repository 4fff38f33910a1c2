# sipflow: two entry points for a fresh machine, `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DEB_PKGS := tshark sip-tester kamailio kamailio-tls-modules kamailio-websocket-modules tcpdump \
            chromium chromium-driver sox
DEMO_PCAP := samples/pcaps/sipp_uac_uas_udp_mixed.pcap

.PHONY: demo test lint typecheck pytest deb venv bench clean

# Byte-compiled once here: an environment with PYTHONDONTWRITEBYTECODE would otherwise
# compile every module at each start (about 0.2 s of each run; benchmarks/README.md).
venv: $(VENV)/.installed
	@$(PY) -m compileall -q sipflow

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: venv
	$(VENV)/bin/sipflow analyze $(DEMO_PCAP) --html out/demo.html
	$(VENV)/bin/sipflow analyze $(DEMO_PCAP) --format json --output out/demo.json
	@echo "HTML report: out/demo.html  JSON: out/demo.json"

# Debian packages the tests drive as real peers and oracles (installed when missing).
deb:
	@missing=""; \
	command -v tshark >/dev/null || missing="$$missing tshark"; \
	command -v sipp >/dev/null || missing="$$missing sip-tester"; \
	command -v kamailio >/dev/null || missing="$$missing kamailio"; \
	ls /usr/lib/*/kamailio/modules/tls.so >/dev/null 2>&1 || missing="$$missing kamailio-tls-modules"; \
	ls /usr/lib/*/kamailio/modules/websocket.so >/dev/null 2>&1 || missing="$$missing kamailio-websocket-modules"; \
	command -v tcpdump >/dev/null || missing="$$missing tcpdump"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v sox >/dev/null || missing="$$missing sox"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

lint: venv
	$(VENV)/bin/ruff check sipflow tests benchmarks
	$(VENV)/bin/ruff format --check sipflow tests benchmarks

typecheck: venv
	$(VENV)/bin/mypy sipflow

pytest: venv deb
	$(VENV)/bin/pytest -q -ra

test: deb venv lint typecheck pytest

bench: venv deb
	$(PY) benchmarks/bench_analyze.py

clean:
	rm -rf $(VENV) out benchmarks/out .mypy_cache .ruff_cache .pytest_cache
