# Stand-in rules.mk: paths and helpers shared by the Image Builder Makefile.
# Like the real one it reads .config, so CONFIG_* values come from that file only.

qstrip=$(strip $(subst ",,$(1)))

-include $(TOPDIR)/.config
include $(TOPDIR)/include/version.mk
include $(TOPDIR)/include/target.mk

BOARD:=$(call qstrip,$(CONFIG_TARGET_BOARD))
SUBTARGET:=$(call qstrip,$(CONFIG_TARGET_SUBTARGET))
TARGETID:=$(BOARD)/$(SUBTARGET)

INCLUDE_DIR:=$(TOPDIR)/include
SCRIPT_DIR:=$(TOPDIR)/scripts
BUILD_DIR:=$(TOPDIR)/build_dir/$(TARGET_BUILD_DIR_NAME)
TARGET_DIR:=$(BUILD_DIR)/root-$(BOARD)
TARGET_DIR_ORIG:=$(BUILD_DIR)/root.orig-$(BOARD)
KERNEL_BUILD_DIR:=$(BUILD_DIR)/linux-$(BOARD)_$(SUBTARGET)
KDIR:=$(KERNEL_BUILD_DIR)
JSON_INFO_DIR:=$(BUILD_DIR)/json_info_files
BIN_DIR:=$(TOPDIR)/bin/targets/$(BOARD)/$(SUBTARGET)
TMP_DIR:=$(TOPDIR)/tmp
DL_DIR:=$(TOPDIR)/dl
PACKAGE_DIR:=$(TOPDIR)/packages
STAGING_DIR_HOST:=$(TOPDIR)/staging_dir/host
# -S: the engine needs only the standard library, and skipping `site` halves start-up.
PYTHON:=python3 -S
