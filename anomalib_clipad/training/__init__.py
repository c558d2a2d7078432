# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Training utilities shared by the prompt-learning models (auxiliary-data training, frozen-feature cache)."""
