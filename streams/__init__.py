"""driftline.streams"""
