include $(sort $(wildcard $(BR2_EXTERNAL_NANOCLAW_PATH)/package/*/*.mk))
