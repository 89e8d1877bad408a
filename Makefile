# landfall: every target sets up what it needs (venv, pinned packages, Java, Kafka's jars).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)
# Apache Kafka's jars (landfall/jvm/kafka-pom.xml), fetched once with Maven.
KAFKA_POM := landfall/jvm/kafka-pom.xml
KAFKA_LIBS := .deps/kafka/libs
KAFKA_STAMP := $(KAFKA_LIBS)/.fetched-$(shell sha1sum $(KAFKA_POM) | cut -c1-12)
# Spark's s3a connector (hadoop-aws + the AWS SDK bundle, landfall/jvm/spark-s3-pom.xml)
# for a lake on an object store: about 660 MB, fetched once with Maven.
SPARK_S3_POM := landfall/jvm/spark-s3-pom.xml
SPARK_JARS := .deps/spark-jars
SPARK_JARS_STAMP := $(SPARK_JARS)/.fetched-$(shell sha1sum $(SPARK_S3_POM) | cut -c1-12)
# A real HDFS for the tests of a lake at hdfs:// (landfall/jvm/hdfs-minicluster-pom.xml:
# Hadoop's MiniDFSCluster, about 105 MB, and its launcher landfall/jvm/MiniHdfs.java).
HDFS_POM := landfall/jvm/hdfs-minicluster-pom.xml
HDFS_LAUNCHER := landfall/jvm/MiniHdfs.java
HDFS_DEPS := .deps/hdfs
HDFS_STAMP := $(HDFS_DEPS)/.fetched-$(shell cat $(HDFS_POM) $(HDFS_LAUNCHER) | sha1sum | cut -c1-12)
# Jaeger's all-in-one (Jaeger v2), built once from source with Go: landfall/go/go.mod
# records it as a tool and go.sum pins every module it is built from.
JAEGER_MOD := landfall/go
JAEGER_BIN := .deps/jaeger/jaeger
JAEGER_STAMP := .deps/jaeger/.built-$(shell cat $(JAEGER_MOD)/go.mod $(JAEGER_MOD)/go.sum | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help setup kafka spark-jars hdfs jaeger system-deps demo up test test-unit chaos bench lint format clean

setup: $(STAMP) kafka spark-jars ## the venv with the pinned packages, Kafka's jars and Spark's s3a connector

# Every target with a `## what it does` comment on its rule line.
help: ## this list of targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk -F ':.*## ' '{ printf "  %-12s %s\n", $$1, $$2 }'

kafka: $(KAFKA_STAMP) ## Apache Kafka's jars for the local broker (Maven, once)

$(KAFKA_STAMP): $(KAFKA_POM)
	@command -v java >/dev/null 2>&1 || { \
	  echo "Java is missing: installing a headless JRE (Kafka and Spark need one)"; \
	  apt-get update -qq && apt-get install -y -qq default-jre-headless; }
	@command -v mvn >/dev/null 2>&1 || { \
	  echo "Maven is missing: installing it (it fetches Apache Kafka's jars)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends maven; }
	rm -rf $(KAFKA_LIBS)
	mvn -q -B -f $(KAFKA_POM) dependency:copy-dependencies \
	  -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	@touch $@

spark-jars: $(SPARK_JARS_STAMP) ## Spark's s3a connector for a lake on an object store (Maven, once)

$(SPARK_JARS_STAMP): $(SPARK_S3_POM)
	@command -v mvn >/dev/null 2>&1 || { \
	  echo "Maven is missing: installing it (it fetches Spark's s3a connector)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends maven; }
	rm -rf $(SPARK_JARS)
	mvn -q -B -f $(SPARK_S3_POM) dependency:copy-dependencies \
	  -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(SPARK_JARS)
	@touch $@

hdfs: $(HDFS_STAMP) ## Hadoop's MiniDFSCluster for the tests of a lake on HDFS (Maven, once)

$(HDFS_STAMP): $(HDFS_POM) $(HDFS_LAUNCHER)
	@command -v mvn >/dev/null 2>&1 || { \
	  echo "Maven is missing: installing it (it fetches Hadoop's minicluster)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends maven; }
	@command -v javac >/dev/null 2>&1 || { \
	  echo "javac is missing: installing a headless JDK (it compiles the HDFS launcher)"; \
	  apt-get update -qq && apt-get install -y -qq default-jdk-headless; }
	rm -rf $(HDFS_DEPS)
	mvn -q -B -f $(HDFS_POM) dependency:copy-dependencies \
	  -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(HDFS_DEPS)/libs
	javac -d $(HDFS_DEPS)/classes -cp '$(HDFS_DEPS)/libs/*' $(HDFS_LAUNCHER)
	@touch $@

jaeger: $(JAEGER_STAMP) ## Jaeger's all-in-one for `landfall up --jaeger` and the tracing tests (Go, once)

$(JAEGER_STAMP): $(JAEGER_MOD)/go.mod $(JAEGER_MOD)/go.sum
	@command -v go >/dev/null 2>&1 || { \
	  echo "Go is missing: install Go 1.24 or newer (it builds Jaeger from source)"; exit 1; }
	rm -f .deps/jaeger/.built-* && mkdir -p $(dir $(JAEGER_BIN))
	cd $(JAEGER_MOD) && go build -o $(CURDIR)/$(JAEGER_BIN) -ldflags "-s -w -X \
	  github.com/jaegertracing/jaeger/internal/version.latestVersion=$$(go list -m -f '{{.Version}}' \
	  github.com/jaegertracing/jaeger)" github.com/jaegertracing/jaeger/cmd/jaeger
	@touch $@

$(STAMP): requirements.lock pyproject.toml
	@command -v java >/dev/null 2>&1 || { \
	  echo "Java is missing: installing a headless JRE (Spark needs one)"; \
	  apt-get update -qq && apt-get install -y -qq default-jre-headless; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-* && touch $@

demo: setup ## one batch end to end on the local stack
	$(VENV)/bin/landfall demo

up: setup ## the local stack (Apache Kafka + services) in the foreground until Ctrl-C
	$(VENV)/bin/landfall up

# What the tests need from the system: a PostgreSQL server (the results database is
# tested on it; the tests start their own throwaway one), Chromium (the browser test
# of the status page and reports), promtool (from Debian's prometheus: it checks and
# unit-tests the alert rules in compose/) and docker-compose (it validates the compose
# file; no Docker engine is needed). Installed from Debian when missing.
system-deps: ## the system packages the tests use (PostgreSQL, Chromium, promtool, docker-compose)
	@missing=""; \
	{ command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl; } >/dev/null 2>&1 \
	  || missing="$$missing postgresql"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages the tests need:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing; \
	fi

test: setup system-deps jaeger hdfs ## the whole suite against real Spark, a real broker and a real MLflow registry
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup ## the quick tests: no broker, no Spark
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The long versions of the hostile-input tests that make test runs short: 10,000
# fuzzed messages through the four services, and a longer schemathesis run on the API;
# and the crash chaos test with every service killed at every point of its stage.
chaos: setup system-deps ## hostile input and crashes at length (tens of minutes; not part of make test)
	LANDFALL_FUZZ_MESSAGES=10000 LANDFALL_TEST_API_FUZZ_EXAMPLES=500 $(PY) -m pytest \
	  tests/e2e/test_hostile_input.py tests/integration/test_api_schema.py $(PYTEST_ARGS)
	LANDFALL_CHAOS_TRIALS=20 $(PY) -m pytest -s tests/e2e/test_chaos.py $(PYTEST_ARGS)

bench: setup ## each stage beside its baseline (minutes; not part of make test)
	$(PY) bench/stage_bench.py --rows 1000000 5000000
	$(PY) bench/predict_bench.py --rows 1000000 5000000
	$(PY) bench/reporter_bench.py --rows 1000000 5000000
	$(PY) bench/lake_store_bench.py --rows 1000000
	$(PY) bench/e2e_bench.py --rows 1000 1000000 5000000 --json .landfall/bench/e2e.json

lint: setup ## ruff and mypy
	$(VENV)/bin/ruff check landfall services tests
	$(VENV)/bin/mypy landfall services bench

format: setup ## ruff's formatter and its fixes
	$(VENV)/bin/ruff format landfall services tests
	$(VENV)/bin/ruff check --fix landfall services tests

clean: ## remove the venv, .landfall, the test cache and .deps
	rm -rf $(VENV) .landfall .pytest_cache .deps
