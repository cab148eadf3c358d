"""The crosscheck stage: the suite's figures beside the C tools'.

``tools`` runs and reads iperf3 and sockperf; ``check`` alternates them
with the suite's compiled cases and tells whether the two agree.
"""
