# Convenience wrapper around CMake for developers; the README's two commands are the scripts.
.PHONY: all test quick run format clean
all:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null && cmake --build build -j$$(nproc)
test:
	scripts/test.sh
quick:
	scripts/test.sh --quick
run:
	scripts/run.sh
format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'fuzz/*.c' 'bench/*.c' | grep -v _table.c)
clean:
	rm -rf build build-asan build-fuzz
