def read_mmm_container(): pass
def write_mmm_container(): pass
