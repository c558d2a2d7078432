# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Method-agnostic mathematics shared by the models: reference memory, score fusion, prompt sets, losses."""
