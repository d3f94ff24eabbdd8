# goldmig: `make run` runs the default matrix and builds its report, `make test` runs the
# project's tests plus the smoke selection. Both install what they need on first use.

APT_PACKAGES := qemu-system-ppc gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross \
	debootstrap bubblewrap cpio gzip openssh-server iproute2 python3-venv \
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-dev pkg-config gcc python3-dev \
	ninja-build libglib2.0-dev libfdt-dev libpixman-1-dev flex bison ccache device-tree-compiler dpkg-dev \
	bc xz-utils
TEST_APT_PACKAGES := chromium
VENV := .venv
BIN := $(VENV)/bin
ALLURE_PIN := harness/report/allure3
ALLURE_DIR := $(VENV)/allure3

.PHONY: setup apt libvirt-user test-apt node venv allure guest run report test bench lint

setup: apt libvirt-user venv allure guest

# Installs whichever of the given Debian packages are missing.
define apt_install
	@missing=$$(for p in $(1); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q || echo "warning: apt-get update failed; installing from the package lists apt has"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

apt:
	$(call apt_install,$(APT_PACKAGES))

# The user and group Debian's libvirt QEMU driver resolves at start (libvirt-daemon-system would
# make them, and start a system libvirtd too; goldmig runs its own daemons instead).
libvirt-user: apt
	@getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
	@id libvirt-qemu >/dev/null 2>&1 || useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt \
		--no-create-home --shell /usr/sbin/nologin libvirt-qemu

test-apt:  # the browser test's headless Chromium
	$(call apt_install,$(TEST_APT_PACKAGES))

node:  # Debian's nodejs and npm, unless this machine has an npm already (e.g. NodeSource's nodejs)
	@command -v npm >/dev/null || $(MAKE) --no-print-directory APT_PACKAGES="nodejs npm" apt

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Allure 3 from the npm registry, at the version and hashes pinned in $(ALLURE_PIN), into
# the project's own .venv (no global install; `goldmig report` never downloads anything).
allure: $(ALLURE_DIR)/.installed

$(ALLURE_DIR)/.installed: $(ALLURE_PIN)/package.json $(ALLURE_PIN)/package-lock.json | node
	mkdir -p $(ALLURE_DIR)
	cp $(ALLURE_PIN)/package.json $(ALLURE_PIN)/package-lock.json $(ALLURE_DIR)/
	cd $(ALLURE_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# The default golden image: our own kernel (compiled once, about 3 minutes on 2 cores, cached).
guest: apt venv
	@$(BIN)/goldmig guest

# The run's exit status is kept; the report is built whatever the cells did.
run: setup
	@status=0; $(BIN)/goldmig run -n auto || status=$$?; $(BIN)/goldmig report || status=$$?; exit $$status

report: venv allure
	$(BIN)/goldmig report

test: setup test-apt
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
