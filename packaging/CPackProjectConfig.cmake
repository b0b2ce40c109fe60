# Read by cpack for every generator. The packaged config (model path, spool) and the unit (ExecStart) name
# /usr and /etc; a tree configured for another prefix would build a .deb whose files are not where they say.
if(CPACK_GENERATOR STREQUAL "DEB" AND NOT CPACK_NEPHRA_CONFIG_DIR STREQUAL "/etc/nephra")
  message(FATAL_ERROR "nephra: the .deb must be built from a tree configured with -DCMAKE_INSTALL_PREFIX=/usr "
                      "(the configuration would be installed to ${CPACK_NEPHRA_CONFIG_DIR}, not /etc/nephra)")
endif()
