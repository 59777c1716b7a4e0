# ctest bench_quick: keysvc-bench --quick, then the JSON checker.
execute_process(COMMAND ${BENCH} --quick --out ${OUT} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "keysvc-bench --quick exited with ${rc}")
endif()
execute_process(COMMAND ${PYTHON} ${CHECKER} ${OUT} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${OUT} failed the check (${rc})")
endif()
