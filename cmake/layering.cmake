# Layering, checked at configure time: a module's code includes only the
# modules its library links (directly or through them), and a library links
# only modules its code includes.
#
# Every library is kvstash_<module>, built from <module>/ (base, kernels,
# model, store, kvcache, engine, compress, serve, bench); its sources and the
# headers in its folder, tests excluded (`*_test.cc`: test binaries link
# more), are scanned for `#include "<module>/..."`. An include of a module
# the library does not reach through its kvstash_* links is an error naming
# the file and the missing link, so an upward include (engine including
# serve/) fails the build instead of becoming a cycle; a direct link to a
# module nothing includes is an error too (the README's layout is drawn from
# these links).

set(KVSTASH_MODULES base kernels model store kvcache engine compress serve
    bench)

# The kvstash_* libraries `target` links directly (any visibility).
function(_kvstash_direct_modules target out)
  get_target_property(links ${target} LINK_LIBRARIES)
  set(modules "")
  foreach(link IN LISTS links)
    string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" link "${link}")
    if(link MATCHES "^kvstash_(.+)$" AND CMAKE_MATCH_1 IN_LIST KVSTASH_MODULES)
      list(APPEND modules ${CMAKE_MATCH_1})
    endif()
  endforeach()
  set(${out} ${modules} PARENT_SCOPE)
endfunction()

# Every module `module`'s library reaches through its links, itself included.
function(_kvstash_reachable module out)
  set(seen ${module})
  set(todo ${module})
  while(todo)
    list(POP_FRONT todo current)
    _kvstash_direct_modules(kvstash_${current} next)
    foreach(m IN LISTS next)
      if(NOT m IN_LIST seen)
        list(APPEND seen ${m})
        list(APPEND todo ${m})
      endif()
    endforeach()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

function(kvstash_check_layering)
  set(errors "")
  foreach(module IN LISTS KVSTASH_MODULES)
    _kvstash_reachable(${module} allowed)
    _kvstash_direct_modules(kvstash_${module} direct)
    file(GLOB files ${PROJECT_SOURCE_DIR}/${module}/*.h
         ${PROJECT_SOURCE_DIR}/${module}/*.cc)
    set(included "")
    foreach(file IN LISTS files)
      if(file MATCHES "_test\\.cc$")
        continue()
      endif()
      file(STRINGS ${file} lines REGEX "^#include \"[a-z_]+/")
      foreach(line IN LISTS lines)
        string(REGEX MATCH "^#include \"([a-z_]+)/" _ "${line}")
        set(used ${CMAKE_MATCH_1})
        if(NOT used IN_LIST KVSTASH_MODULES)
          continue()  # hwy/, tests/testing/ ...
        endif()
        list(APPEND included ${used})
        if(NOT used IN_LIST allowed)
          file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR} ${file})
          list(APPEND errors
               "${rel} includes ${used}/ but kvstash_${module} does not link "
               "kvstash_${used}")
        endif()
      endforeach()
    endforeach()
    foreach(linked IN LISTS direct)
      if(NOT linked IN_LIST included)
        list(APPEND errors
             "kvstash_${module} links kvstash_${linked} but no file of "
             "${module}/ includes ${linked}/")
      endif()
    endforeach()
  endforeach()
  if(errors)
    list(JOIN errors "\n  " text)
    message(FATAL_ERROR "layering:\n  ${text}")
  endif()
endfunction()
