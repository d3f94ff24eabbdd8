# goldmig: `make run` runs the default matrix, `make test` runs the project's tests
# plus the smoke selection. Both install what they need on first use.

APT_PACKAGES := qemu-system-ppc gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross \
	debootstrap bubblewrap cpio gzip openssh-server iproute2 python3-venv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup apt venv guest run test bench lint

setup: apt venv guest

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q || echo "warning: apt-get update failed; installing from the package lists apt has"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

guest: apt venv
	@$(BIN)/goldmig guest

run: setup
	$(BIN)/goldmig run -n auto

test: setup
	$(BIN)/pytest
	$(BIN)/goldmig run --select smoke

bench: setup
	$(BIN)/goldmig bench
	$(BIN)/goldmig bench-recording
	$(BIN)/goldmig bench-provisioning
	$(BIN)/goldmig bench-throughput
	$(BIN)/goldmig bench-stream
	$(BIN)/goldmig bench-fuzz

lint: venv
	$(BIN)/ruff check harness suite tests
	$(BIN)/mypy
