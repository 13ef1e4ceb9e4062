"""driftline.api"""
